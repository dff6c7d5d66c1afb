"""bench-rollback: how fast a regressing canary is rolled back, and how often a healthy one is
rolled back by mistake, on the real parts (control plane, operator, Prometheus, gateway)."""
