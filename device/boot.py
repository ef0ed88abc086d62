# Runs at every power-on before main.py.
import esp

esp.osdebug(None)
import gc

gc.collect()
