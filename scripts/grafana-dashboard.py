#!/usr/bin/env python3
"""Writes docs/grafana-weft.json, the Grafana dashboard for weft-stat's
metrics. Edit the panels here and re-run; the Prometheus test in
tools/weft-stat/tests/stat.rs runs every query of the written file against a
real Prometheus scraping a real workload, with $node, $channel and $cpu set
to ".*" (the hardware panels that need a PMU must return nothing where
weft_hardware_counters_available is 0).

Rows: software (weft's own counters), bursts and headroom, operating system,
hardware. The per-core panels of the three levels take the same $cpu, so a
pinned agent's duty cycle, its core's busy/irq/steal time and that core's
IPC and software events line up. Alerts of weft-stat serve --rules are an
annotation on every panel."""
import json
import pathlib

SEL = 'node=~"$node"'
CH = 'node=~"$node",channel=~"$channel"'
CPU = 'cpu=~"$cpu"'
AGENT_CORE = 'on(node, pid, agent) group_left(core) weft_agent_info{core=~"$cpu|none"}'

# A row is a title; a panel is (title, unit, [(expr, legend)], width).
PANELS = [
    "Software: weft's counters",
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
    "Bursts and headroom (weft-stat serve samples every 1 ms; peaks since the previous scrape)",
    ("Channel headroom: 1 - peak 1 ms rate / measured saturation", "percentunit", [
        (f"weft_channel_headroom_ratio{{{CH}}}", "{{node}} {{role}} {{channel}} {{stream}}")], 8),
    ("Agent headroom: 1 - peak duty cycle", "percentunit", [
        (f"weft_agent_headroom_ratio{{{SEL}}} * {AGENT_CORE}", "{{node}} agent {{name}} core {{core}}")], 8),
    ("Peak message rate over 1 ms and 1 s windows", "ops", [
        (f"weft_channel_peak_rate_messages_per_second{{{CH}}}", "{{window}} {{node}} {{role}} {{channel}} {{stream}}")], 8),
    ("Ring fill high-water mark (fullest since the last scrape)", "percentunit", [
        ('weft_shm_ring_fill_high_water_ratio{channel=~"$channel"}', "{{channel}} {{stream}}")], 8),
    ("Saturation rate the headroom is judged against (weft-bench stress)", "ops", [
        (f"weft_channel_saturation_messages_per_second{{{CH}}}", "{{channel}}: {{path}} at {{msg_bytes}} B")], 8),
    ("Alerts firing and notifications on Redis", "none", [
        ("weft_stat_alerts_firing", "firing {{alertname}}"),
        ("increase(weft_stat_notifications_total[5m])", "notifications {{outcome}} (5 min)"),
        ("weft_stat_notifications_queued", "queued for Redis"),
        ("weft_stat_redis_up", "Redis up"),
    ], 8),
    "Operating system: the same cores and the agents' threads",
    ("Core busy by mode (share of the core)", "percentunit", [
        (f'sum by (instance, cpu, mode) (rate(node_cpu_seconds_total{{{CPU},mode!="idle"}}[1m]))', "cpu {{cpu}} {{mode}}")], 8),
    ("Core irq, softirq and steal (share of the core)", "percentunit", [
        (f'rate(node_cpu_seconds_total{{{CPU},mode=~"irq|softirq|steal"}}[1m])', "cpu {{cpu}} {{mode}}")], 8),
    ("Agent thread: on a CPU and waiting for one (run-queue delay)", "percentunit", [
        (f"rate(weft_thread_cpu_seconds_total{{{SEL}}}[1m]) * {AGENT_CORE}", "on CPU {{node}} {{name}} core {{core}}"),
        (f"rate(weft_thread_run_delay_seconds_total{{{SEL}}}[1m]) * {AGENT_CORE}", "waiting {{node}} {{name}} core {{core}}"),
    ], 8),
    ("Agent thread context switches / s", "ops", [
        (f"rate(weft_thread_context_switches_total{{{SEL}}}[1m])", "{{kind}} {{node}} {{name}}")], 8),
    ("Agent thread migrations per minute (a pinned agent: 0)", "none", [
        (f"increase(weft_thread_migrations_total{{{SEL}}}[1m])", "{{node}} {{name}}")], 8),
    ("Kernel UDP errors per minute (/proc/net/snmp) and weft sockets' drops", "none", [
        ("increase(weft_host_udp_receive_buffer_errors_total[1m])", "RcvbufErrors {{instance}}"),
        ("increase(weft_host_udp_send_buffer_errors_total[1m])", "SndbufErrors {{instance}}"),
        ("increase(weft_host_udp_in_errors_total[1m])", "InErrors {{instance}}"),
        (f"increase(weft_udp_socket_drops_total{{{SEL}}}[1m])", "socket {{node}} {{local}}"),
    ], 8),
    ("Memory locked and in huge pages", "bytes", [
        (f"weft_process_locked_memory_bytes{{{SEL}}}", "locked {{node}} {{pid}}"),
        (f"weft_process_huge_pages_bytes{{{SEL}}}", "huge pages {{node}} {{pid}}"),
        ("(weft_host_huge_pages - weft_host_huge_pages_free) * on(instance) node_memory_Hugepagesize_bytes", "host huge pages in use {{instance}}"),
    ], 8),
    "Hardware: the same cores (cycles, instructions and LLC misses need a PMU)",
    ("Hardware counters available (0: no PMU, the IPC and LLC panels stay empty)", "none", [
        ("weft_hardware_counters_available", "{{instance}}")], 8),
    ("IPC per core (instructions / cycles)", "none", [
        (f"rate(weft_cpu_instructions_total{{{CPU}}}[1m]) / rate(weft_cpu_cycles_total{{{CPU}}}[1m])", "cpu {{cpu}}")], 8),
    ("Last-level cache misses / s per core", "ops", [
        (f"rate(weft_cpu_llc_misses_total{{{CPU}}}[1m])", "cpu {{cpu}}")], 8),
    ("Context switches, migrations and page faults / s per core (perf software events)", "ops", [
        (f"rate(weft_cpu_context_switches_total{{{CPU}}}[1m])", "switches cpu {{cpu}}"),
        (f"rate(weft_cpu_migrations_total{{{CPU}}}[1m])", "migrations cpu {{cpu}}"),
        (f"rate(weft_cpu_page_faults_total{{{CPU}}}[1m])", "page faults cpu {{cpu}}"),
    ], 12),
    ("NIC packets, drops and errors / s", "ops", [
        ("rate(node_network_receive_packets_total[1m])", "rx {{device}}"),
        ("rate(node_network_transmit_packets_total[1m])", "tx {{device}}"),
        ("rate(node_network_receive_drop_total[1m]) + rate(node_network_transmit_drop_total[1m])", "drops {{device}}"),
        ("rate(node_network_receive_errs_total[1m]) + rate(node_network_transmit_errs_total[1m])", "errors {{device}}"),
    ], 12),
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


def row(i, y, title):
    return {
        "id": i + 1,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def main():
    panels, x, y = [], 0, 0
    for i, p in enumerate(PANELS):
        if isinstance(p, str):
            y += 7 if x > 0 else 0
            panels.append(row(i, y, p))
            x, y = 0, y + 1
            continue
        title, unit, targets, w = p
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
        "version": 3,
        "editable": True,
        "time": {"from": "now-15m", "to": "now"},
        "refresh": "5s",
        "tags": ["weft"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            var("node", "label_values(weft_process_up, node)"),
            var("cpu", "label_values(node_cpu_seconds_total, cpu)"),
            var("channel", "label_values({__name__=~\"weft_shm_ring_capacity_bytes|weft_udp_sent_messages_total|weft_udp_received_messages_total\"}, channel)"),
        ]},
        "annotations": {"list": [{
            "name": "weft alerts",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "enable": True,
            "iconColor": "red",
            "expr": "weft_stat_alerts_firing > 0",
            "step": "15s",
            "titleFormat": "{{alertname}}",
            "tagKeys": "alertname",
            "textFormat": "firing (weft-stat serve --rules; the notification is on Redis: weft-stat watch)",
        }]},
        "panels": panels,
    }
    out = pathlib.Path(__file__).resolve().parent.parent / "docs" / "grafana-weft.json"
    out.write_text(json.dumps(dash, indent=2) + "\n")


main()
