"""What runs beside the accelerator. Board-side code here imports only numpy and pynq."""
