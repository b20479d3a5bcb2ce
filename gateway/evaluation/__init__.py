"""Guardrail evaluation: does the model call or skip each action when it should? (``eval``)."""
