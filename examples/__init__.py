"""Example services built on knai-provider."""
