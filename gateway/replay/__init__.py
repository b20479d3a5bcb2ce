"""Recorded conversations: cassettes, recording, replay, differences, the pytest plugin."""
