"""The system layer: our processes as a whole (gunicorn, HAProxy, several chat servers,
faults, the hostile network, JMeter, observability, a browser)."""
