"""Turning trained models into deployable graphs."""
