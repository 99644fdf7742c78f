#!/usr/bin/env python3
"""Hand-written merge cases for profiles without events (generic, ccu-manifest).
Every expected value here is written out by hand. Run: python3 scripts/manual-cases.py"""
import json, os

def case(profile, name, base, ours, theirs, expected, indent=2, crlf=False, bom=False):
    d = os.path.join("tests/cases", profile, name)
    os.makedirs(d, exist_ok=True)
    for fname, obj in (("base", base), ("ours", ours), ("theirs", theirs), ("expected", expected)):
        if obj is None:
            text = ""
        else:
            styled = fname in ("ours", "expected")
            text = json.dumps(obj, indent=indent if styled else 2, ensure_ascii=False) + "\n"
            if styled and crlf: text = text.replace("\n", "\r\n")
            if styled and bom: text = "\ufeff" + text
        with open(os.path.join(d, fname + ".json"), "w", encoding="utf-8", newline="") as f:
            f.write(text)

G = "generic"
case(G, "counters-add-both-sides", {"requests": 10, "tokens": 1000, "cost": 1.5},
     {"requests": 12, "tokens": 1200, "cost": 1.75}, {"requests": 15, "tokens": 1500, "cost": 2.5},
     {"requests": 17, "tokens": 1700, "cost": 2.75})
case(G, "new-keys-both-sides", {"by_model": {"a": 1}}, {"by_model": {"a": 2, "b": 1}}, {"by_model": {"a": 1, "c": 5}},
     {"by_model": {"a": 2, "b": 1, "c": 5}})
case(G, "times-take-the-later", {"updated_at": "2026-01-01T00:00:00Z", "version": "1.9", "n": 1},
     {"updated_at": "2026-01-03T00:00:00Z", "version": "1.10", "n": 2}, {"updated_at": "2026-01-02T00:00:00+00:00", "version": "1.9", "n": 3},
     {"updated_at": "2026-01-03T00:00:00Z", "version": "1.10", "n": 4})
case(G, "records-by-id-added-and-deleted",
     {"items": [{"id": "a", "n": 1}, {"id": "b", "n": 1}]},
     {"items": [{"id": "a", "n": 1}, {"id": "c", "n": 3}]},
     {"items": [{"id": "a", "n": 2}, {"id": "b", "n": 1}, {"id": "d", "n": 4}]},
     {"items": [{"id": "a", "n": 2}, {"id": "c", "n": 3}, {"id": "d", "n": 4}]})
case(G, "same-record-added-both-sides", {"items": []},
     {"items": [{"uuid": "x", "tokens": 5}]}, {"items": [{"uuid": "x", "tokens": 5}]}, {"items": [{"uuid": "x", "tokens": 5}]})
case(G, "scalar-union", {"tags": ["a", "b"]}, {"tags": ["a", "b", "c"]}, {"tags": ["b", "d"]}, {"tags": ["b", "c", "d"]})
case(G, "reset-one-side-other-adds", {"requests": 100}, {"requests": 0}, {"requests": 103}, {"requests": 3})
case(G, "empty-base-add-add", None, {"requests": 1, "name": "x"}, {"requests": 2, "name": "x"}, {"requests": 3, "name": "x"})
case(G, "labels-series", {"days": [{"label": "2026-01-01", "value": 1}]},
     {"days": [{"label": "2026-01-01", "value": 2}, {"label": "2026-01-02", "value": 1}]},
     {"days": [{"label": "2026-01-01", "value": 3}, {"label": "2026-01-03", "value": 7}]},
     {"days": [{"label": "2026-01-01", "value": 4}, {"label": "2026-01-02", "value": 1}, {"label": "2026-01-03", "value": 7}]})
case(G, "crlf-bom-4-space-indent", {"a": 1, "b": {"c": [1]}}, {"a": 2, "b": {"c": [1]}}, {"a": 1, "b": {"c": [1, 2]}},
     {"a": 2, "b": {"c": [1, 2]}}, indent=4, crlf=True, bom=True)
case(G, "key-order-of-ours-kept", {"z": 1, "a": 1}, {"z": 2, "m": 1, "a": 1}, {"z": 1, "a": 1, "b": 1},
     {"z": 2, "m": 1, "a": 1, "b": 1})

M = "ccu-manifest"
def mach(name, sync, total, backups=(), cur=None):
    return {"machine_name": name, "last_sync": sync, "last_record_date": sync, "total_records": total,
            "current_file": cur or f"usage_data_{name}.json", "backups": list(backups)}
def man(updated, machines, ret=30):
    return {"version": "1.0", "last_updated": updated, "machines": machines, "backup_retention_days": ret}
t = lambda d: f"2026-10-{d:02d}T12:00:00Z"
case(M, "each-side-updates-its-machine", man(t(1), [mach("a", t(1), 10), mach("b", t(1), 20)]),
     man(t(2), [mach("a", t(2), 15), mach("b", t(1), 20)]), man(t(3), [mach("a", t(1), 10), mach("b", t(3), 27)]),
     man(t(3), [mach("a", t(2), 15), mach("b", t(3), 27)]))
case(M, "new-machines-both-sides", man(t(1), [mach("a", t(1), 1)]),
     man(t(2), [mach("a", t(1), 1), mach("b", t(2), 2)]), man(t(3), [mach("a", t(1), 1), mach("c", t(3), 3)]),
     man(t(3), [mach("a", t(1), 1), mach("b", t(2), 2), mach("c", t(3), 3)]))
case(M, "later-sync-wins", man(t(1), [mach("a", t(1), 1)]), man(t(5), [mach("a", t(5), 50)]), man(t(4), [mach("a", t(4), 40)]),
     man(t(5), [mach("a", t(5), 50)]))
case(M, "backups-united", man(t(1), [mach("a", t(1), 1, ["b1"])]), man(t(2), [mach("a", t(2), 2, ["b1", "b2"])]),
     man(t(3), [mach("a", t(1), 1, ["b1", "b3"])]), man(t(3), [mach("a", t(2), 2, ["b1", "b2", "b3"])]))
case(M, "machine-removed-one-side", man(t(1), [mach("a", t(1), 1), mach("old", t(1), 9)]),
     man(t(2), [mach("a", t(2), 2)]), man(t(1), [mach("a", t(1), 1), mach("old", t(1), 9)]), man(t(2), [mach("a", t(2), 2)]))
case(M, "empty-base-add-add", None, man(t(1), [mach("a", t(1), 1)]), man(t(2), [mach("b", t(2), 2)]),
     man(t(2), [mach("a", t(1), 1), mach("b", t(2), 2)]))
case(M, "retention-changed-one-side", man(t(1), [], 30), man(t(1), [], 90), man(t(2), [], 30), man(t(2), [], 90))
case(M, "crlf-bom-4-space-indent", man(t(1), [mach("a", t(1), 1)]), man(t(2), [mach("a", t(2), 2)]),
     man(t(3), [mach("a", t(1), 1), mach("b", t(3), 3)]), man(t(3), [mach("a", t(2), 2), mach("b", t(3), 3)]), indent=4, crlf=True, bom=True)
# Both sides add the same machine first, then one of their own: one order whichever side is ours.
case(M, "same-new-machine-first-on-both-sides", man(t(1), [], 18),
     man(t(1), [mach("c", t(1), 0), mach("a", t(1), 0)], 18), man(t(1), [mach("c", t(1), 0), mach("b", t(1), 0)], 1),
     man(t(1), [mach("c", t(1), 0), mach("a", t(1), 0), mach("b", t(1), 0)], 1))
