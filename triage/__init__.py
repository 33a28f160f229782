"""triage: Chinese complaint triage and routing."""
