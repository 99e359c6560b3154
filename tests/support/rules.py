"""eKuiper rules for the e2e tests: started, and live before the test publishes."""


def start_rule(kuiperd, kuiper, mosquitto, rule: str, sql: str, dst: str, src: str,
               options: dict | None = None) -> None:
    """Create `rule` (`sql`, one MQTT sink to topic `dst`, a message per row) and wait until it runs and its
    source has subscribed to topic `src` at the broker, so nothing published after this is lost.

    Args:
        kuiperd: harness.Kuiperd (for its MQTT sink action); kuiper: its REST client;
        mosquitto: harness.Mosquitto (its log shows the subscription); options: the rule's options.

    Raises:
        TimeoutError: the rule is not running, or its source not subscribed, within the waits' bounds.
    """
    kuiper.create_rule(rule, sql, [kuiperd.mqtt_action(dst, sendSingle=True)], options)
    kuiper.wait_rule_running(rule)
    mosquitto.wait_subscribed(src)
