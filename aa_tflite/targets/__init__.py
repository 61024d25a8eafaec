"""Export targets: TFLite Micro, Android, the browser and the Edge TPU."""
