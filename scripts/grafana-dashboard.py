#!/usr/bin/env python3
"""Writes docs/grafana-weft.json, the Grafana dashboard for weft-stat's
metrics. Edit the panels here and re-run; the Prometheus test in
tools/weft-stat/tests/stat.rs runs every query of the written file against a
real Prometheus scraping a real workload, with $node and $channel set to
".*"."""
import json
import pathlib

SEL = 'node=~"$node"'
CH = 'node=~"$node",channel=~"$channel"'

# (title, unit, [(expr, legend)], width)
PANELS = [
    ("Processes up", "none", [(f"weft_process_up{{{SEL}}}", "{{node}} {{pid}}")], 8),
    ("Heartbeat age", "s", [(f"weft_process_heartbeat_age_seconds{{{SEL}}}", "{{node}} {{pid}}")], 8),
    ("Agent utilization (busy / (busy + idle))", "percentunit", [(
        f"rate(weft_agent_busy_seconds_total{{{SEL}}}[1m]) / (rate(weft_agent_busy_seconds_total{{{SEL}}}[1m]) + rate(weft_agent_idle_seconds_total{{{SEL}}}[1m]))"
        f" * on(node, pid, agent) group_left(core) weft_agent_info",
        "{{node}} agent {{name}} core {{core}}")], 8),
    ("Task busy time (share of a core)", "percentunit", [(
        f"rate(weft_task_busy_seconds_total{{{SEL}}}[1m]) * on(node, pid, task) group_left(agent) weft_task_info",
        "{{node}} {{name}} on agent {{agent}}")], 12),
    ("Task work items / s", "ops", [(f"rate(weft_task_work_total{{{SEL}}}[1m])", "{{node}} {{name}}")], 12),
    ("UDP messages sent / s", "ops", [(f"sum by (node, channel, stream) (rate(weft_udp_sent_messages_total{{{CH}}}[1m]))", "{{node}} {{channel}} {{stream}}")], 8),
    ("UDP messages received / s", "ops", [(f"sum by (node, role, channel, stream) (rate(weft_udp_received_messages_total{{{CH}}}[1m]))", "{{node}} {{role}} {{channel}} {{stream}}")], 8),
    ("UDP receiver behind sender (datagrams)", "none", [(
        f"weft_udp_send_position{{channel=~\"$channel\"}} - on(channel, stream) group_right weft_udp_receive_position{{{CH}}}",
        "{{node}} {{role}} {{channel}} {{stream}}")], 8),
    ("UDP send window and unacknowledged (datagrams)", "none", [
        (f"weft_udp_send_window_datagrams{{{CH}}}", "window {{node}} {{channel}} {{stream}}"),
        (f"weft_udp_send_unacknowledged_datagrams{{{CH}}}", "unacked {{node}} {{channel}} {{stream}}"),
    ], 8),
    ("Loss: datagrams lost and LOSS events (per scrape interval, spikes kept)", "none", [
        (f"increase(weft_udp_datagrams_lost_total{{{CH}}}[1m])", "lost {{node}} {{channel}} {{stream}}"),
        (f"max_over_time(increase(weft_udp_loss_events_total{{{CH}}}[30s])[5m:15s])", "LOSS events (max 30 s) {{node}} {{channel}}"),
    ], 8),
    ("NAKs and repairs / s", "ops", [
        (f"rate(weft_udp_naks_sent_total{{{CH}}}[1m])", "NAKs {{node}} {{channel}}"),
        (f"rate(weft_udp_repairs_sent_total{{{CH}}}[1m])", "repairs {{node}} {{channel}}"),
    ], 8),
    ("Back-pressure events / s", "ops", [
        (f"rate(weft_udp_send_back_pressured_total{{{CH}}}[1m])", "udp {{node}} {{channel}}"),
        (f"rate(weft_shm_back_pressured_total{{{CH}}}[1m])", "shm {{node}} {{role}} {{channel}}"),
    ], 8),
    ("Dropped datagrams (malformed, foreign, kernel), per minute", "none", [
        (f"increase(weft_udp_receive_dropped_total{{{CH}}}[1m])", "dropped {{node}} {{channel}}"),
        (f"increase(weft_udp_kernel_drops_total{{{CH}}}[1m])", "kernel {{node}} {{channel}}"),
    ], 8),
    ("Shared-memory messages / s", "ops", [
        (f"rate(weft_shm_sent_messages_total{{{CH}}}[1m])", "sent {{node}} {{role}} {{channel}} {{stream}}"),
        (f"rate(weft_shm_received_messages_total{{{CH}}}[1m])", "read {{node}} {{role}} {{channel}} {{stream}}"),
    ], 8),
    ("Shared-memory backlog (bytes behind the newest publication)", "bytes", [
        (f"weft_shm_subscriber_lag_bytes{{{CH}}}", "{{node}} {{pid}} {{channel}} {{stream}}")], 8),
    ("Shared-memory ring fill (backlog / capacity)", "percentunit", [
        (f"weft_shm_subscriber_lag_bytes{{{CH}}} / weft_shm_ring_capacity_bytes", "{{node}} {{pid}} {{channel}} {{stream}}")], 8),
    ("Errors by kind, per minute", "none", [
        (f"increase(weft_errors_total{{{SEL}}}[1m])", "{{node}} {{kind}}")], 12),
    ("Error log (count of each distinct error)", "none", [
        (f"weft_error_log_total{{{SEL}}}", "{{node}} {{error}}")], 12),
    ("Longest agent duty cycle", "s", [(f"weft_agent_max_cycle_seconds{{{SEL}}}", "{{node}} agent {{name}}")], 8),
    ("Agent duty cycle p99", "s", [(f"histogram_quantile(0.99, sum by (node, pid, agent, le) (rate(weft_agent_cycle_seconds_bucket{{{SEL}}}[1m])))", "{{node}} agent {{agent}}")], 8),
    ("One-way latency p50 / p99 (sampled channels)", "s", [
        (f"histogram_quantile(0.5, sum by (channel, stream, le) (rate(weft_one_way_latency_seconds_bucket{{{CH}}}[1m])))", "p50 {{channel}} {{stream}}"),
        (f"histogram_quantile(0.99, sum by (channel, stream, le) (rate(weft_one_way_latency_seconds_bucket{{{CH}}}[1m])))", "p99 {{channel}} {{stream}}"),
    ], 8),
]


def panel(i, x, y, title, unit, targets, w):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": 7},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + k), "expr": e, "legendFormat": l}
            for k, (e, l) in enumerate(targets)
        ],
    }


def main():
    panels, x, y = [], 0, 0
    for i, (title, unit, targets, w) in enumerate(PANELS):
        if x + w > 24:
            x, y = 0, y + 7
        panels.append(panel(i, x, y, title, unit, targets, w))
        x += w
    var = lambda name, query: {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }
    dash = {
        "title": "weft",
        "uid": "weft-overview",
        "schemaVersion": 39,
        "version": 2,
        "editable": True,
        "time": {"from": "now-15m", "to": "now"},
        "refresh": "5s",
        "tags": ["weft"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            var("node", "label_values(weft_process_up, node)"),
            var("channel", "label_values({__name__=~\"weft_shm_ring_capacity_bytes|weft_udp_sent_messages_total|weft_udp_received_messages_total\"}, channel)"),
        ]},
        "panels": panels,
    }
    out = pathlib.Path(__file__).resolve().parent.parent / "docs" / "grafana-weft.json"
    out.write_text(json.dumps(dash, indent=2) + "\n")


main()
