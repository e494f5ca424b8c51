"""Session 20 (rayaddr20): ``metarec serve`` joined to a cluster (``RAY_ADDRESS``) with ``--port`` in use
on the node: Ray Serve's proxy actor failed to bind and the CLI ended in a ``RayTaskError`` traceback 9 s
after the start (measured against a real head). The port is not checked here first on a joined cluster
(the proxy runs on the cluster's nodes); the proxy's failure is now one line naming --port."""

from __future__ import annotations

import pytest

from metarec_dist.errors import UserError
from metarec_dist.runtime import ray_launcher, serving


def proxy_failed(message: str) -> Exception:
    from ray.exceptions import RayTaskError

    return RayTaskError("ProxyActor.ready", "Traceback: ...", RuntimeError(message))


@pytest.fixture
def joined(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setattr(ray_launcher, "check_ray_address", lambda: None)
    monkeypatch.setattr(ray_launcher, "init_ray", lambda **kw: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})


def test_a_port_in_use_on_the_cluster_is_one_line(monkeypatch, joined):
    from ray import serve

    def start(http_options):
        raise proxy_failed(f"Failed to bind to address '{http_options['host']}:{http_options['port']}'.")

    monkeypatch.setattr(serve, "start", start)
    http = {"host": "127.0.0.1", "port": 18292, "request_timeout_s": 30.0}
    with pytest.raises(
        UserError, match=r"^--host 127.0.0.1 --port 18292: Ray Serve's HTTP proxy .* another --port"
    ):
        serving.deploy(object(), http, replicas=1, threads=1, max_body=1024, joined=True)


def test_another_proxy_failure_is_raised_as_it_is(monkeypatch, joined):
    from ray import serve
    from ray.exceptions import RayTaskError

    def start(http_options):
        raise proxy_failed("something else")

    monkeypatch.setattr(serve, "start", start)
    http = {"host": "127.0.0.1", "port": 18292, "request_timeout_s": 30.0}
    with pytest.raises(RayTaskError):
        serving.deploy(object(), http, replicas=1, threads=1, max_body=1024, joined=True)


# Session 21 (ray21): Serve's shutdown on a joined cluster (serving.shutdown_serve) failing, e.g. its
# controller unreachable, is a warning after Ctrl-C, not a traceback.
def test_a_failed_serve_shutdown_after_ctrl_c_is_a_warning(monkeypatch, caplog):
    import ray
    from ray import serve

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(serve, "delete", lambda name: None)

    def unreachable():
        raise ray.exceptions.GetTimeoutError("Get timed out: the controller did not answer\nmore")

    monkeypatch.setattr(serving, "shutdown_serve", unreachable)
    serving.stop_serving(joined=True)
    assert "Ray Serve was not shut down on the cluster at RAY_ADDRESS: Get timed out" in caplog.text


# Session 21 (ray21): RAY_ADDRESS=ray://... (a Ray client) loaded the model, started Serve and ended ~20 s
# later in Ray Serve's "Deploying application metarec failed" traceback (every replica failed on the client's
# object reference; Ray Serve does not support Ray Client). Now one line before anything starts.
def test_serve_through_a_ray_client_is_one_line_before_anything_starts(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("loaded the model: the refusal must come first")

    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:10001")
    monkeypatch.setattr(serving, "load_served", never)
    monkeypatch.setattr(ray_launcher, "init_ray", never)
    with pytest.raises(
        UserError, match=r"^RAY_ADDRESS=ray://127\.0\.0\.1:10001: metarec serve does not run "
    ):
        serving.serve_model("unused-export", port=18293)
