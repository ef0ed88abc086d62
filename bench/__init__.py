"""`make bench`: espblink against Microdot and the tutorial server, same runtime, heap and machine."""
