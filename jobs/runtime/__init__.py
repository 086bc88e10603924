"""How every rank of a stage runs inside the container: the task start (task.py), the frame around a
stage body (frame.py), the engine the plan chose (engine.py) and the continuation signal (signals.py).
Standard library only."""
