/* postern dashboard, part 3 of 3: the people on a tunnel's page. Its signed-in visitors
 * (sessions, from `GET /api/v1/sessions?tunnel=`), each of which can be ended, and the
 * tunnel's token volume. Values from the relay are only ever set as text.
 */
'use strict';

/* The "Visitors" section of HTTP tunnel `t`'s page: a table of open sessions that reloads
 * itself, with a button per row that ends that person's sessions (or revokes the share link
 * that let them in). */
function visitorsPanel(t) {
  const body = el('tbody', {});
  const section = el('section', { id: 'visitors' },
    el('h2', {}, 'Signed-in visitors'),
    el('table', { id: 'sessions-table' }, el('thead', {}, el('tr', {},
      ['Who', 'Via', 'Signed in', 'Expires', ''].map((h) => el('th', {}, h)))), body));
  const end = (s) => s.via === 'share'
    ? api('DELETE', '/api/v1/shares/' + enc(s.pass))
    : api('DELETE', '/api/v1/sessions?tunnel=' + enc(t.name) + '&email=' + enc(s.email));
  const create = (s) => el('tr', { 'data-session': s.id },
    el('td', {}, s.email || 'share link ' + s.pass),
    el('td', {}, s.via),
    el('td', { title: s.created }, ago(s.created)),
    el('td', {}, s.expires),
    el('td', {}, armed(s.via === 'share' ? 'Revoke link' : 'End', 'End now?', { 'data-end-session': s.id }, async () => {
      await end(s);
      await load();
    })));
  async function load() {
    const r = await api('GET', '/api/v1/sessions?tunnel=' + enc(t.name));
    keyed(body, r.sessions, (s) => s.id, create, () => {}, 5,
      'Nobody is signed in. Visitors sign in on tunnels opened with --login or --allow-email.');
  }
  return { section, load };
}

/* "7.3 MB of 10 GB this month, renews 2027-01-01T00:00:00Z", or null without a volume. */
function volumeText(v) {
  if (!v) return null;
  return bytes(v.used) + ' of ' + bytes(v.bytes) + ' this ' + v.period + ', renews ' + v.resets_at;
}
