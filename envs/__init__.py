"""Lethe envs package."""
