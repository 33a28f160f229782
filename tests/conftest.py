import pytest

from tests.bundles import build_small_bundle


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """A four-head linear bundle trained on 400 corpus records with the opt-in rule-state
    features (built once per run)."""
    return build_small_bundle(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def small_model(small_bundle):
    from triage.model import load

    return load(small_bundle)


# --- serve/: fixtures for tests/test_serve*.py and tests/test_feedback*.py ----------------
from pathlib import Path as _Path  # noqa: E402

SERVE_TICKETS = _Path(__file__).resolve().parent / "fixtures" / "serve_tickets.jsonl"


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory):
    """A tiny four-head bundle from 60 made-up tickets (char n-grams only, 2 folds)."""
    from training.train import TrainConfig, train
    from triage.features import FeatureConfig

    out = tmp_path_factory.mktemp("serve") / "bundle"
    train(TrainConfig(data=[str(SERVE_TICKETS)], folds=2, name="serve-tiny",
                      features=FeatureConfig(words=False, max_features=2000, min_df=1)), out)
    return out


@pytest.fixture(scope="session")
def serve_bundle_b(serve_bundle, tmp_path_factory):
    """The same bundle under another model_version, to tell reloads apart."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("serve-b") / "bundle"
    shutil.copytree(serve_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    manifest["model_version"] = manifest["model_version"] + "-b"
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), "utf-8")
    return out


@pytest.fixture(scope="session")
def serve_model(serve_bundle):
    from triage.model import load

    return load(serve_bundle)


@pytest.fixture
def serve_config(serve_bundle, tmp_path):
    """A Config for one app: the tiny bundle, a fresh SQLite feedback DB, no API keys."""
    from serve.config import Config

    return Config(model_path=str(serve_bundle), database_url=f"sqlite:///{tmp_path / 'feedback.sqlite3'}")


@pytest.fixture
def make_app(serve_config, serve_model):
    """``make_app(**config_changes)`` -> a Flask app; closed after the test."""
    from serve.app import create_app

    apps = []

    def make(**changes):
        config = serve_config.replace(**changes)
        model = serve_model if config.model_path == serve_config.model_path else None
        app = create_app(config, model=model)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["triage"].close()


@pytest.fixture
def serve_client(make_app):
    """A Flask test client of an app made by ``make_app()``."""
    return make_app().test_client()


@pytest.fixture
def serve_logs():
    """JSON log lines of the ``triage.serve`` logger during the test (as dicts)."""
    import json
    import logging

    from serve.logs import JsonFormatter

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("triage.serve")
    logger.addHandler(handler)
    level = logger.level
    yield type("Logs", (), {"lines": lines, "records": lambda self: [json.loads(x) for x in lines]})()
    logger.removeHandler(handler)
    logger.setLevel(level)


E2E_KEYS = {"score": "e2e-score-key", "admin": "e2e-admin-key"}


@pytest.fixture(scope="session")
def serve_server(serve_bundle, tmp_path_factory):
    """The real server (gunicorn, 2 workers, API keys on) on a free loopback port, for the session."""
    from tests.e2e.server import ServerProcess

    server = ServerProcess(serve_bundle, tmp_path_factory.mktemp("server"), workers=2,
                           keys=f"{E2E_KEYS['score']}:score,{E2E_KEYS['admin']}:admin")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
