"""Payload side: the channel client for payload authors and the reference payloads."""
