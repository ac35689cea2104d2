"""Coursework: demos that make each readiness pitfall happen on purpose, and an event trace."""
