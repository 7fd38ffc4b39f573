"""Model analysis: parameters and multiply-adds (``complexity``), per-stage
forward times (``stage_profile``), training memory with and without activation
checkpointing (``cp_memory``) and the process measurements they share
(``process_stats``). Import the submodules; this package imports nothing itself.
"""
