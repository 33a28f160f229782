"""Exceptions raised by the inference library, each with a stable machine-readable code."""


class TriageError(Exception):
    code = "triage_error"


class InvalidTicketError(TriageError, ValueError):
    """The ticket cannot be scored (empty, too long, wrong type)."""

    code = "invalid_ticket"

    def __init__(self, message: str, code: str | None = None, field: str = "text"):
        super().__init__(message)
        if code:
            self.code = code
        self.field = field


class BundleError(TriageError):
    """A model bundle is missing, corrupt, truncated or of an unknown schema."""

    code = "bad_bundle"


class TaxonomyError(TriageError, ValueError):
    code = "bad_taxonomy"


class RulesError(TriageError, ValueError):
    code = "bad_rules"
