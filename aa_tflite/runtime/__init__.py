"""What a Raspberry Pi imports (numpy and an interpreter; no TensorFlow, no schema): loading an
interpreter, batched runs, the child-process guard and ``OperatingPoints``."""
