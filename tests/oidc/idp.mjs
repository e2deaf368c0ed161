// A real OpenID provider for postern's SSO tests: node-oidc-provider, on an ephemeral loopback
// port, with one confidential client and a table of users whose passwords are checked.
//
// Input: one JSON argument
//   { "client_id", "client_secret",
//     "users": [{ "login", "password", "email", "email_verified", "groups": [..] }],
//     "skew_secs": 0 }          // this provider's clock runs this far ahead (negative: behind)
// Output: one line on stdout, {"issuer": "http://127.0.0.1:<port>"}, once it listens. It then
// reads one line on stdin, {"redirect_uris": [..]} (known once the relay listens), and answers
// {"ready": true}.
//
// The login form is this file's own (the library's development forms take any password):
// GET /interaction/<uid> shows it, POST checks the password and finishes the login; consent is
// granted at once for the one first-party client.
import http from 'node:http';
import readline from 'node:readline';
import Provider from 'oidc-provider';

const input = JSON.parse(process.argv[2] || '{}');
const skewMs = (input.skew_secs || 0) * 1000;
if (skewMs) {
  const realNow = Date.now;
  Date.now = () => realNow() + skewMs;
}
const users = new Map((input.users || []).map((u) => [u.login, u]));

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html><head><title>${escape(title)}</title></head>
<body><h1>${escape(title)}</h1>${body}</body></html>`;
const form = (uid, error) => page('Sign in', `${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
  <input type="text" name="login" autofocus>
  <input type="password" name="password">
  <button type="submit">Sign in</button>
</form>`);

const server = http.createServer();
const setup = (issuer, redirectUris) => {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: input.client_id,
      client_secret: input.client_secret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    // Claims go into the ID token itself, so the relay needs no userinfo call.
    conformIdTokenClaims: false,
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const user = users.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: user.email,
            email_verified: user.email_verified !== false,
            groups: user.groups || [],
          };
        },
      };
    },
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email groups');
      grant.addOIDCClaims(['email', 'email_verified', 'groups']);
      await grant.save();
      return grant;
    },
    cookies: { keys: ['postern-test-idp'] },
    // Cookies and interactions outlast a clock set 15 minutes behind; ID tokens last 10 minutes.
    ttl: { Session: 3600, Interaction: 3600, Grant: 3600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
  });
  provider.proxy = false;

  const body = (req) => new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(new URLSearchParams(data)));
  });
  const send = (res, status, html) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  };
  const callback = provider.callback();
  server.on('request', async (req, res) => {
    const m = req.url.match(/^\/interaction\/([\w-]+)(\/login)?$/);
    if (!m) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      if (req.method === 'GET') return send(res, 200, form(details.uid));
      const params = await body(req);
      const user = users.get(params.get('login'));
      if (!user || user.password !== params.get('password')) {
        return send(res, 200, form(details.uid, 'Wrong login or password'));
      }
      return provider.interactionFinished(req, res, { login: { accountId: user.login } }, {
        mergeWithLastSubmission: false,
      });
    } catch (e) {
      return send(res, 400, page('Error', `<p>${escape(e.message)}</p>`));
    }
  });
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
};

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.once('line', (line) => setup(issuer, JSON.parse(line).redirect_uris));
});
