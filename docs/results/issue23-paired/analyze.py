import json,glob,statistics as st,collections,sys
import os
# The results directory: the one given, else this script's (issue 23's runs).
d=sys.argv[1] if len(sys.argv)>1 else os.path.dirname(os.path.abspath(__file__))
rows={'base':collections.defaultdict(list),'new':collections.defaultdict(list)}
rel={'base':collections.defaultdict(list),'new':collections.defaultdict(list)}
for b in ['base','new']:
    for f in sorted(glob.glob(f'{d}/{b}-*/results.jsonl')):
        runs=collections.defaultdict(dict)
        for l in open(f):
            r=json.loads(l)
            rows[b][r['scenario']].append((r['p50_ns'],r.get('ratio_to_probes'),r['p99_ns']))
            runs[(r['requested'],r['run'])][r['scenario']]=r['p50_ns']
        for k,v in runs.items():
            if 'interleaved-floor-mcast' in v:
                for s in ['interleaved-udp-pingpong','interleaved-api-udp-pingpong','interleaved-udp-pingpong-auth']:
                    if s in v: rel[b][s+' / floor-mcast'].append(v[s]/v['interleaved-floor-mcast'])
            if 'interleaved-shm-pingpong' in v:
                for s in ['interleaved-api-shm-pingpong','interleaved-bcast-pingpong']:
                    rel[b][s+' / shm-pingpong'].append(v[s]/v['interleaved-shm-pingpong'])
            if 'interleaved-udp-pingpong' in v and 'interleaved-udp-pingpong-auth' in v:
                rel[b]['auth - plain udp-pingpong (ns)'].append(v['interleaved-udp-pingpong-auth']-v['interleaved-udp-pingpong'])
print("| scenario | runs | p50 before (median, min–max) | p50 after | after / before | ×probe before | ×probe after |")
print("|---|---|---|---|---|---|---|")
for s in sorted(set(rows['base'])|set(rows['new'])):
    b=rows['base'].get(s,[]); n=rows['new'].get(s,[])
    def m(x,i): 
        v=[t[i] for t in x if t[i] is not None]
        return st.median(v) if v else None
    def rng(x): 
        v=[t[0] for t in x]; return f"{min(v)}–{max(v)}" if v else "-"
    mb,mn=m(b,0),m(n,0)
    ratio=f"{mn/mb:.3f}" if mb and mn else "-"
    pb,pn=m(b,1),m(n,1)
    print(f"| {s} | {len(b)}/{len(n)} | {mb} ({rng(b)}) | {mn} ({rng(n)}) | {ratio} | {pb if pb is None else round(pb,2)} | {pn if pn is None else round(pn,2)} |")
print()
print("| paired within a run | before (median) | after (median) | after / before |")
print("|---|---|---|---|")
for s in sorted(set(rel['base'])|set(rel['new'])):
    b=rel['base'].get(s,[]); n=rel['new'].get(s,[])
    mb=st.median(b) if b else None; mn=st.median(n) if n else None
    r=f"{mn/mb:.3f}" if mb and mn else "-"
    f=lambda x: "-" if x is None else (f"{x:.0f}" if abs(x)>10 else f"{x:.3f}")
    print(f"| {s} | {f(mb)} | {f(mn)} | {r} |")
