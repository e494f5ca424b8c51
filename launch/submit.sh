#!/usr/bin/env bash
# Submit a training run to a Ray cluster through Ray Jobs (for shell users; same as `metarec submit`).
#   RAY_ADDRESS=http://HEAD:8265 bash launch/submit.sh --config configs/base-100m.yaml --set train.meta_steps=5000 [--wait]
# With token auth on the cluster: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<token from `ray get-auth-token`>.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source launch/setup_venv.sh
: "${RAY_ADDRESS:?set RAY_ADDRESS to the Ray Jobs API, e.g. http://127.0.0.1:8265}"
exec "$VENV/bin/metarec" submit --address "$RAY_ADDRESS" "$@"
