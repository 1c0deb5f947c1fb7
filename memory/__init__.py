"""Lethe memory package."""
