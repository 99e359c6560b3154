"""The camera bridge: camera frames into MQTT for eKuiper streams (a process kuiperd never loads)."""
