"""vanex plugin: a deep linear network task (Saxe, McClelland & Ganguli 2014)."""
