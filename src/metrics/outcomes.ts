// Figures of the parts behind the routes: tokens issued and refused, directory (LDAP) operations,
// signature verifications. Each part reports through a small callback it declares itself (it
// knows nothing of Prometheus); these implement them. A label value outside its known set is
// counted as `other`, so no caller can grow the number of series by mistake.
import { Counter, Histogram, type Registry } from 'prom-client';

const oneOf = <T extends string>(known: readonly T[], value: string): T | 'other' => ((known as readonly string[]).includes(value) ? (value as T) : 'other');

const GRANTS = ['basic', 'anonymous', 'password', 'refresh_token', 'unsupported'] as const;
const REFUSALS = ['unauthorized', 'denied', 'throttled', 'invalid_request', 'unavailable', 'error'] as const;

export class TokenMetrics {
  private readonly issuedTotal: Counter<'grant'>;
  private readonly refusedTotal: Counter<'grant' | 'reason'>;

  constructor(registry: Registry) {
    this.issuedTotal = new Counter({
      name: 'portcullis_tokens_issued_total',
      help: 'Access tokens issued by /auth/token, by grant (basic, anonymous, password, refresh_token)',
      labelNames: ['grant'],
      registers: [registry],
    });
    this.refusedTotal = new Counter({
      name: 'portcullis_tokens_refused_total',
      help: 'Token requests refused by /auth/token, by grant and reason (unauthorized, denied, throttled, invalid_request, unavailable, error)',
      labelNames: ['grant', 'reason'],
      registers: [registry],
    });
  }

  readonly issued = (grant: string): void => {
    this.issuedTotal.inc({ grant: oneOf(GRANTS, grant) });
  };

  readonly refused = (grant: string, reason: string): void => {
    this.refusedTotal.inc({ grant: oneOf(GRANTS, grant), reason: oneOf(REFUSALS, reason) });
  };
}

const DIRECTORY_OPERATIONS = ['bind', 'search'] as const;
const DIRECTORY_OUTCOMES = ['ok', 'refused', 'error'] as const;

export class DirectoryMetrics {
  private readonly duration: Histogram<'operation' | 'outcome'>;

  constructor(registry: Registry) {
    this.duration = new Histogram({
      name: 'portcullis_ldap_operation_duration_seconds',
      help: 'LDAP operations by kind (bind: the service account or a user checking a password; search: a lookup on a pooled connection) and outcome (ok; refused: the directory answered no, e.g. a wrong password; error: unreachable, timed out or in trouble)',
      labelNames: ['operation', 'outcome'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
  }

  readonly observe = (operation: string, seconds: number, outcome: string): void => {
    this.duration.observe({ operation: oneOf(DIRECTORY_OPERATIONS, operation), outcome: oneOf(DIRECTORY_OUTCOMES, outcome) }, seconds);
  };
}

const SIGNATURE_FORMATS = ['cosign', 'sigstore-bundle', 'gpg'] as const;
const SIGNATURE_OUTCOMES = ['valid', 'invalid', 'error'] as const;
const SIGNATURE_TRIGGERS = ['arrival', 'reverify'] as const;

export class SignatureMetrics {
  private readonly total: Counter<'format' | 'outcome' | 'trigger'>;

  constructor(registry: Registry) {
    this.total = new Counter({
      name: 'portcullis_signature_verifications_total',
      help: 'Signatures judged, by format, outcome (valid, invalid, error: could not be judged) and trigger (arrival of a cosign signature or sigstore bundle; reverify after a trust policy change)',
      labelNames: ['format', 'outcome', 'trigger'],
      registers: [registry],
    });
  }

  readonly verified = (format: string, outcome: string, trigger: string): void => {
    this.total.inc({ format: oneOf(SIGNATURE_FORMATS, format), outcome: oneOf(SIGNATURE_OUTCOMES, outcome), trigger: oneOf(SIGNATURE_TRIGGERS, trigger) });
  };
}
