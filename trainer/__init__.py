"""Rewards, GRPO and IFPO advantages, and export of traces to RL backends."""
