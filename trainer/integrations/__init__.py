"""IFPO plug-ins for RL trainers: a verl advantage estimator and rule tool, and a TRL `GRPOTrainer` subclass.

Each module imports its trainer library (verl or trl) at import time, so this
package imports none of them.
"""
