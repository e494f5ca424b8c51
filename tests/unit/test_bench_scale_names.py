"""`metarec bench scale`'s data part: every log (and so every run folder) has its own name whatever N is,
and a user mistake inside a child part reaches the user as one UserError line."""

from __future__ import annotations

import pytest

from metarec_dist.bench import scale
from metarec_dist.errors import UserError


@pytest.mark.parametrize("interactions", [2_000, scale.BASE_INTERACTIONS, 200_000])
def test_data_logs_have_distinct_names_when_sizes_collide(interactions, tmp_path):
    logs = scale.data_logs(interactions, tmp_path)
    assert {n for n, _ in logs.values()} >= {interactions, 10 * interactions}
    paths = [path for _, path in logs.values()]
    assert len({p.stem for p in paths}) == len(paths) == 3
    assert all(p.parent == tmp_path for p in paths)


def test_a_user_error_in_a_child_part_is_a_user_error_here(tmp_path):
    # A real child interpreter: the data part on a log that does not exist stops on a UserError there.
    with pytest.raises(
        UserError, match="^bench scale part data: data.path: .*missing.parquet not found"
    ) as err:
        scale._child(
            "data",
            log=str(tmp_path / "missing.parquet"),
            cache=str(tmp_path),
            workers=1,
            storage=str(tmp_path),
        )
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)
