"""triage: Chinese complaint triage and routing.

    import triage
    model = triage.load("models/default")
    model.score({"text": "小区停水一整天了"}).to_dict()
"""

from triage.errors import BundleError, InvalidTicketError, TriageError
from triage.model import Model, Ticket, TriageResult, load
from triage.normalize import mask_pii, normalize_text
from triage.taxonomy import load_taxonomy

__all__ = ["load", "Model", "Ticket", "TriageResult", "TriageError", "InvalidTicketError", "BundleError",
           "normalize_text", "mask_pii", "load_taxonomy"]
