# Writes docs/grafana-dashboard.json (python3 docs/grafana/generate.py from the checkout root).
import json
panels=[]
def ts(title, exprs, unit="short", x=0, y=0, w=12, h=8, legend=None):
    pid=len(panels)+1
    targets=[{"refId":chr(65+i),"expr":e,"legendFormat":l,"datasource":{"type":"prometheus","uid":"${datasource}"}} for i,(e,l) in enumerate(exprs)]
    panels.append({"id":pid,"type":"timeseries","title":title,"gridPos":{"x":x,"y":y,"w":w,"h":h},
        "datasource":{"type":"prometheus","uid":"${datasource}"},
        "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},
        "options":{"legend":{"displayMode":"table","placement":"right","calcs":["lastNotNull","max"]},"tooltip":{"mode":"multi"}},
        "targets":targets})
def stat(title, expr, unit, x, y, w=4, h=4):
    pid=len(panels)+1
    panels.append({"id":pid,"type":"stat","title":title,"gridPos":{"x":x,"y":y,"w":w,"h":h},
        "datasource":{"type":"prometheus","uid":"${datasource}"},
        "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},
        "targets":[{"refId":"A","expr":expr,"datasource":{"type":"prometheus","uid":"${datasource}"}}]})
def row(title,y):
    panels.append({"id":len(panels)+1,"type":"row","title":title,"collapsed":False,"gridPos":{"x":0,"y":y,"w":24,"h":1},"panels":[]})
I='instance=~"$instance"'
y=0
stat("Nodes up", f'count(up{{job=~"$job",{I}}} == 1)', "short", 0, y)
stat("Requests/s", f'sum(rate(mpreg_requests_total{{role="rpc",{I}}}[1m]))', "reqps", 4, y)
stat("Errors/s", f'sum(rate(mpreg_commands_total{{outcome="error",{I}}}[1m]))', "short", 8, y)
stat("Call p99", f'histogram_quantile(0.99, sum by (le) (rate(mpreg_call_duration_seconds_bucket{{{I}}}[5m])))', "s", 12, y)
stat("Functions loaded", f'sum(mpreg_functions_loaded{{{I}}})', "short", 16, y)
stat("Queue depth", f'sum(mpreg_queue_depth_all{{{I}}})', "short", 20, y)
y=4; row("RPC", y); y+=1
ts("Requests/s by outcome", [(f'sum by (role, outcome) (rate(mpreg_requests_total{{{I}}}[1m]))',"{{role}} {{outcome}}")], "reqps", 0, y)
ts("Commands/s by function", [(f'sum by (function, version) (rate(mpreg_commands_total{{{I}}}[1m]))',"{{function}}@{{version}}")], "ops", 12, y)
y+=8
ts("Errors/s by code", [(f'sum by (code) (rate(mpreg_commands_total{{outcome="error",{I}}}[1m]))',"{{code}}")], "short", 0, y)
ts("Call duration p50 / p99 by function", [
    (f'histogram_quantile(0.5, sum by (le, function) (rate(mpreg_call_duration_seconds_bucket{{{I}}}[5m])))',"p50 {{function}}"),
    (f'histogram_quantile(0.99, sum by (le, function) (rate(mpreg_call_duration_seconds_bucket{{{I}}}[5m])))',"p99 {{function}}")], "s", 12, y)
y+=8
ts("Plugin call phases p99", [
    (f'histogram_quantile(0.99, sum by (le) (rate(mpreg_call_queue_wait_seconds_bucket{{{I}}}[5m])))',"queue wait"),
    (f'histogram_quantile(0.99, sum by (le) (rate(mpreg_call_instantiate_seconds_bucket{{{I}}}[5m])))',"instantiate"),
    (f'histogram_quantile(0.99, sum by (le) (rate(mpreg_call_run_seconds_bucket{{{I}}}[5m])))',"run")], "s", 0, y)
ts("Plugin failures/s by kind", [(f'sum by (kind) (rate(mpreg_plugin_failures_total{{{I}}}[1m]))',"{{kind}}")], "short", 12, y)
y+=8
ts("In flight", [(f'sum by (instance) (mpreg_requests_in_flight{{{I}}})',"requests {{instance}}"),(f'sum by (instance) (mpreg_calls_running{{{I}}})',"plugin calls {{instance}}"),(f'sum by (instance) (mpreg_run_slots_in_use{{{I}}})',"run slots {{instance}}")], "short", 0, y)
ts("Request levels p50 / p99", [(f'histogram_quantile(0.5, sum by (le) (rate(mpreg_request_levels_bucket{{{I}}}[5m])))',"p50"),(f'histogram_quantile(0.99, sum by (le) (rate(mpreg_request_levels_bucket{{{I}}}[5m])))',"p99")], "short", 12, y)
y+=8; row("Cluster", y); y+=1
ts("Forwarded calls/s", [(f'sum by (instance) (rate(mpreg_forwarded_calls_total{{{I}}}[1m]))',"sent {{instance}}"),(f'sum by (instance) (rate(mpreg_forwarded_calls_received_total{{{I}}}[1m]))',"received {{instance}}"),(f'sum by (instance) (rate(mpreg_reroutes_total{{{I}}}[1m]))',"re-routed {{instance}}")], "ops", 0, y)
ts("Members and links", [(f'max by (instance) (mpreg_cluster_members{{state="live",{I}}})',"members seen by {{instance}}"),(f'sum by (instance) (mpreg_peer_link_up{{{I}}})',"links up from {{instance}}"),(f'sum by (instance) (increase(mpreg_peer_link_connects_total{{{I}}}[5m]))',"reconnects {{instance}}")], "short", 12, y)
y+=8
ts("Peer call round trip p50 / p99", [(f'histogram_quantile(0.5, sum by (le, peer) (rate(mpreg_peer_call_round_trip_seconds_bucket{{{I}}}[5m])))',"p50 {{peer}}"),(f'histogram_quantile(0.99, sum by (le, peer) (rate(mpreg_peer_call_round_trip_seconds_bucket{{{I}}}[5m])))',"p99 {{peer}}")], "s", 0, y, 24, 8)
y+=8; row("Pub/sub, queues, cache", y); y+=1
ts("Pub/sub messages/s", [(f'sum(rate(mpreg_pubsub_published_total{{{I}}}[1m]))',"published"),(f'sum(rate(mpreg_pubsub_notifications_total{{{I}}}[1m]))',"notifications"),(f'sum(rate(mpreg_pubsub_received_from_peers_total{{{I}}}[1m]))',"from peers"),(f'sum(rate(mpreg_pubsub_slow_subscriber_cutoffs_total{{{I}}}[5m]))',"slow cut-offs")], "short", 0, y)
ts("Queue depth", [(f'sum by (queue) (mpreg_queue_depth{{{I}}})',"{{queue}}"),(f'sum by (queue) (mpreg_queue_in_flight{{{I}}})',"in flight {{queue}}")], "short", 12, y)
y+=8
ts("Queue redeliveries and dead letters/s", [(f'sum by (queue) (rate(mpreg_queue_redeliveries_total{{{I}}}[5m]))',"redelivered {{queue}}"),(f'sum by (queue) (rate(mpreg_queue_dead_lettered_total{{{I}}}[5m]))',"dead-lettered {{queue}}")], "short", 0, y)
ts("Queue ack latency (mean)", [(f'sum by (queue) (rate(mpreg_queue_ack_seconds_total{{{I}}}[5m])) / clamp_min(sum by (queue) (rate(mpreg_queue_acks_total{{{I}}}[5m])), 1e-9)',"{{queue}}")], "s", 0, y+8, 12, 8)
ts("Cache hit ratio by namespace", [(f'sum by (namespace) (rate(mpreg_cache_l1_hits_total{{{I}}}[5m])) / clamp_min(sum by (namespace) (rate(mpreg_cache_l1_hits_total{{{I}}}[5m])) + sum by (namespace) (rate(mpreg_cache_l1_misses_total{{{I}}}[5m])), 1e-9)',"{{namespace}}")], "percentunit", 12, y)
y+=16; row("Process", y); y+=1
ts("Resident memory", [(f'mpreg_process_resident_memory_bytes{{{I}}}',"{{instance}}"),(f'mpreg_guest_memory_used_bytes{{{I}}}',"guest memory {{instance}}")], "bytes", 0, y)
ts("CPU (cores)", [(f'rate(mpreg_process_cpu_seconds_total{{{I}}}[1m])',"{{instance}}")], "short", 12, y)
y+=8
ts("Connections", [(f'mpreg_connections_open{{{I}}}',"open {{instance}}"),(f'rate(mpreg_connections_refused_total{{{I}}}[5m])',"refused/s {{instance}}")], "short", 0, y)
ts("Plugin publishes and retirements", [(f'sum by (outcome) (increase(mpreg_plugin_publishes_total{{{I}}}[5m]))',"{{outcome}}"),(f'sum(increase(mpreg_plugin_retirements_total{{{I}}}[5m]))',"retired"),(f'sum(increase(mpreg_plugin_hot_swaps_total{{{I}}}[5m]))',"hot swaps")], "short", 12, y)
dash={"title":"MPREG","uid":"mpreg-overview","schemaVersion":39,"version":1,"editable":True,"refresh":"10s",
 "time":{"from":"now-1h","to":"now"},"tags":["mpreg"],
 "templating":{"list":[
  {"name":"datasource","type":"datasource","query":"prometheus","label":"Data source"},
  {"name":"job","type":"query","datasource":{"type":"prometheus","uid":"${datasource}"},"query":"label_values(mpreg_build_info, job)","includeAll":True,"multi":True,"current":{"text":"All","value":"$__all"},"allValue":".*"},
  {"name":"instance","type":"query","datasource":{"type":"prometheus","uid":"${datasource}"},"query":"label_values(mpreg_build_info{job=~\"$job\"}, instance)","includeAll":True,"multi":True,"current":{"text":"All","value":"$__all"},"allValue":".*"}]},
 "panels":panels}
json.dump(dash, open("docs/grafana-dashboard.json","w"), indent=2)
print(len(panels))
