"""Evaluation harness: retrieval quality now; agent safety and utility to come."""
