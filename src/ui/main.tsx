// The Portcullis web console: a small single-page app (Preact, preact-iso's router) that shows
// only what the server's APIs answer for the signed-in person.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { LocationProvider, Route, Router, useLocation } from 'preact-iso';
import { currentSession, onSessionEnded, signOut, type Session } from './api.js';
import { Access } from './pages/access.js';
import { Audit } from './pages/audit.js';
import { Image } from './pages/image.js';
import { Repositories } from './pages/repositories.js';
import { Repository } from './pages/repository.js';
import { SignIn } from './pages/sign-in.js';
import './styles.css';

function Header({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const { path } = useLocation();
  const link = (href: string, label: string) => (
    <a href={href} aria-current={path === href || (href !== '/ui/' && path.startsWith(href)) ? 'page' : undefined}>
      {label}
    </a>
  );
  const mayAudit = session.admin || session.auditor;
  return (
    <header class="top">
      <a class="brand" href="/ui/">
        Portcullis
      </a>
      <nav aria-label="Main">
        {link('/ui/', 'Repositories')}
        {mayAudit && link('/ui/audit', 'Audit')}
        {mayAudit && link('/ui/access', 'Access')}
      </nav>
      <div class="who">
        <span data-testid="signed-in-as">
          {session.user}
          {session.admin ? ' (administrator)' : session.auditor ? ' (auditor)' : ''}
        </span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </header>
  );
}

function NotFound() {
  return (
    <main>
      <h1>Not found</h1>
      <p>
        There is no such page. <a href="/ui/">Back to the repositories</a>
      </p>
    </main>
  );
}

function App() {
  const [session, setSession] = useState<Session | undefined | null>(null);
  const [notice, setNotice] = useState<string | undefined>();

  useEffect(() => {
    currentSession().then(
      (found) => setSession(found),
      () => setSession(undefined),
    );
    return onSessionEnded(() => {
      setNotice('Your session has ended. Sign in again.');
      setSession(undefined);
    });
  }, []);

  if (session === null) return <p class="loading">Loading…</p>;
  if (session === undefined) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(signedIn) => {
          setNotice(undefined);
          setSession(signedIn);
        }}
      />
    );
  }
  const leave = () => {
    void signOut().finally(() => {
      setNotice('You have signed out.');
      setSession(undefined);
    });
  };
  return (
    <>
      <a class="skip" href="#content">
        Skip to content
      </a>
      <Header session={session} onSignOut={leave} />
      <div id="content">
        <Router>
          <Route path="/ui/" component={() => <Repositories />} />
          <Route path="/ui/repository" component={() => <Repository />} />
          <Route path="/ui/image" component={() => <Image />} />
          <Route path="/ui/audit" component={() => <Audit session={session} />} />
          <Route path="/ui/access" component={() => <Access session={session} />} />
          <Route default component={NotFound} />
        </Router>
      </div>
    </>
  );
}

const root = document.getElementById('app');
if (root) {
  render(
    <LocationProvider scope="/ui/">
      <App />
    </LocationProvider>,
    root,
  );
}
