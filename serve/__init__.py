"""The triage HTTP service: a Flask app (``serve.app.create_app``) run by gunicorn.

Nothing is loaded at import: the model, the feedback database and the metrics
registry are created by the app factory. See ``serve/README.md``.
"""
