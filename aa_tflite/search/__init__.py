"""The search (no TensorFlow): candidates, the bench that builds and measures variants, memory
models, the greedy planner, verification and the budget floor."""
