// Turns what a client asks for (Docker scopes) into what it gets: the intersection of the
// request with what the rules allow — never a refusal for asking too much (Docker asks for
// pull,push even to pull: moby#15640).
import type { ResourceAccess } from '../tokens/access.js';
import { allowedActions, explain, mayAudit, type AccessRule, type Action, type Principal } from './rules.js';
import type { AccessRuleStore } from './store.js';

const TOKEN_ACTIONS = ['pull', 'push', 'delete'] as const;

export class AccessPolicy {
  private cached?: { rules: AccessRule[]; at: number };

  /** Rules are re-read after `cacheMs`, so a change made on another replica shows up quickly. */
  constructor(
    private readonly store: AccessRuleStore,
    private readonly cacheMs = 2_000,
  ) {}

  async rules(): Promise<AccessRule[]> {
    if (!this.cached || Date.now() - this.cached.at > this.cacheMs) {
      this.cached = { rules: await this.store.list(), at: Date.now() };
    }
    return this.cached.rules;
  }

  invalidate(): void {
    this.cached = undefined;
  }

  async allowed(principal: Principal, repository: string): Promise<Set<Action>> {
    return allowedActions(await this.rules(), principal, repository);
  }

  async explain(principal: Principal, repository: string): Promise<AccessRule[]> {
    return explain(await this.rules(), principal, repository);
  }

  isAdmin(principal: Principal): boolean {
    return principal.kind === 'user' && principal.identity.admin === true;
  }

  /** Whether the principal may read the audit log (see rules.ts, mayAudit). */
  async mayAudit(principal: Principal): Promise<boolean> {
    return mayAudit(await this.rules(), principal);
  }

  async grant(principal: Principal, requested: readonly ResourceAccess[]): Promise<ResourceAccess[]> {
    const granted: ResourceAccess[] = [];
    for (const resource of requested) {
      const wanted = resource.actions.includes('*') ? [...TOKEN_ACTIONS] : resource.actions;
      let actions: string[];
      if (resource.type === 'repository') {
        const allowed = await this.allowed(principal, resource.name);
        actions = wanted.filter((action) => allowed.has(action as Action));
      } else if (resource.type === 'registry' && resource.name === 'catalog') {
        // Everyone may list; the listing shows only what the caller may pull.
        actions = resource.actions.includes('*') ? ['*'] : [];
      } else if (resource.type === 'registry' && resource.name === 'admin') {
        actions = this.isAdmin(principal) && resource.actions.includes('*') ? ['*'] : [];
      } else if (resource.type === 'registry' && resource.name === 'audit') {
        // The auditors' scope: the audit endpoints of the admin API, and nothing else there.
        actions = resource.actions.includes('*') && (await this.mayAudit(principal)) ? ['*'] : [];
      } else {
        actions = [];
      }
      if (actions.length > 0) granted.push({ type: resource.type, name: resource.name, actions });
    }
    return granted;
  }
}
