"""Jobs: training and evaluation runs of user code, their event-sourced history and gates."""
