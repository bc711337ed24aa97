# Drives veil's control port with stem, as a relay operator's script would.
# Usage: stem_check.py PORT ok | stem_check.py PORT wrongcookie BADCOOKIEFILE
# Prints one JSON object; exits non-zero on failure.
import json
import queue
import sys
import time

import stem
import stem.connection
import stem.response
from stem.control import Controller, EventType

port = int(sys.argv[1])
mode = sys.argv[2]

if mode == 'wrongcookie':
    bad = sys.argv[3]
    results = {}
    for name, fn in (('cookie', stem.connection.authenticate_cookie), ('safecookie', stem.connection.authenticate_safecookie)):
        c = Controller.from_port(address='127.0.0.1', port=port)
        try:
            fn(c, bad)
            results[name] = 'accepted'
        except stem.connection.AuthenticationFailure as exc:
            results[name] = type(exc).__name__
        # the port must have closed the connection: a further command fails
        try:
            c.get_info('version')
            results[name + '_after'] = 'answered'
        except Exception as exc:
            results[name + '_after'] = type(exc).__name__
        c.close()
    print(json.dumps(results))
    sys.exit(0)

out = {}
c = Controller.from_port(address='127.0.0.1', port=port)
c.authenticate()
out['version'] = c.get_info('version')
out['parsed_version'] = str(c.get_version())
out['pid'] = c.get_pid()
out['fingerprint'] = c.get_info('fingerprint')
out['circuits'] = [{'id': x.id, 'status': x.status, 'path': [fp for fp, nick in x.path], 'nicks': [nick for fp, nick in x.path]} for x in c.get_circuits()]

# The hops are relays stem finds in the network status, with their address.
ns = [c.get_network_status(fp) for fp in out['circuits'][0]['path']] if out['circuits'] else []
out['ns'] = [{'fingerprint': e.fingerprint, 'nickname': e.nickname, 'address': e.address, 'or_port': e.or_port} for e in ns]

# stem parses the links as ORCONN events.
orconns = []
for line in c.get_info('orconn-status').splitlines():
    ev = stem.response.ControlMessage.from_str('650 ORCONN %s\r\n' % line, 'EVENT')
    orconns.append({'fingerprint': ev.endpoint_fingerprint, 'status': ev.status})
out['orconns'] = orconns

circ_events = queue.Queue()
bw_events = queue.Queue()
c.add_event_listener(lambda e: circ_events.put((e.id, e.status, [fp for fp, nick in e.path])), EventType.CIRC)
c.add_event_listener(lambda e: bw_events.put((e.read, e.written)), EventType.BW)
# stem and nyx subscribe to these and give up when refused
c.add_event_listener(lambda e: None, EventType.SIGNAL, EventType.CONF_CHANGED, EventType.STATUS_SERVER, EventType.NEWCONSENSUS, EventType.NOTICE, EventType.WARN, EventType.ERR)

old = set(x['id'] for x in out['circuits'])
c.signal(stem.Signal.NEWNYM)
built = None
deadline = time.time() + 30
while built is None and time.time() < deadline:
    try:
        cid, status, path = circ_events.get(timeout=max(0.1, deadline - time.time()))
    except queue.Empty:
        break
    if status == 'BUILT' and cid not in old:
        built = {'id': cid, 'path': path}
out['built_after_newnym'] = built

bws = []
deadline = time.time() + 10
while len(bws) < 2 and time.time() < deadline:
    try:
        bws.append(bw_events.get(timeout=max(0.1, deadline - time.time())))
    except queue.Empty:
        break
out['bw'] = bws
# The plain cookie method works too (authenticate() above chose SAFECOOKIE).
c2 = Controller.from_port(address='127.0.0.1', port=port)
stem.connection.authenticate_cookie(c2, c.get_protocolinfo().cookie_path)
out['plain_cookie_version'] = c2.get_info('version')
c2.close()
out['circuits_after'] = [{'id': x.id, 'status': x.status, 'path': [fp for fp, nick in x.path]} for x in c.get_circuits()]
c.close()
print(json.dumps(out))
