// S3 for tests: the coordinates of a real Ceph RADOS Gateway and a fresh bucket per test.
//
// `npm test` (test/run.mjs) starts one gateway for the whole run when a selected test file imports
// this module (directly or through another support module), and hands its coordinates to every test
// process in PORTCULLIS_TEST_S3_*. A test file run on its own (`node --test dist/test/…`) has no
// such variables: testS3() then starts a private gateway for this process, stopped when it exits.
// Setting the variables by hand points the tests at any other S3 server.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { startCephRgw } from './ceph-rgw.js';

export interface TestS3 {
  /** http://127.0.0.1:<port>; path-style addressing. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

/** The environment variables that carry a gateway's coordinates to the test processes. */
export const S3_ENV = {
  endpoint: 'PORTCULLIS_TEST_S3_ENDPOINT',
  accessKeyId: 'PORTCULLIS_TEST_S3_ACCESS_KEY',
  secretAccessKey: 'PORTCULLIS_TEST_S3_SECRET_KEY',
  region: 'PORTCULLIS_TEST_S3_REGION',
} as const satisfies Record<keyof TestS3, string>;

/** `s3` as the PORTCULLIS_TEST_S3_* variables (test/run.mjs passes them to the test processes). */
export function s3Env(s3: TestS3): Record<string, string> {
  return {
    [S3_ENV.endpoint]: s3.endpoint,
    [S3_ENV.accessKeyId]: s3.accessKeyId,
    [S3_ENV.secretAccessKey]: s3.secretAccessKey,
    [S3_ENV.region]: s3.region,
  };
}

function fromEnv(): TestS3 | undefined {
  const [endpoint, accessKeyId, secretAccessKey, region] = [S3_ENV.endpoint, S3_ENV.accessKeyId, S3_ENV.secretAccessKey, S3_ENV.region].map(
    (name) => process.env[name],
  );
  if (!endpoint) return undefined;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error(`${S3_ENV.endpoint} is set but ${S3_ENV.accessKeyId} or ${S3_ENV.secretAccessKey} is not`);
  }
  return { endpoint, accessKeyId, secretAccessKey, region: region || 'us-east-1' };
}

let privateGateway: Promise<TestS3> | undefined;

/**
 * The S3 server this test process uses: the run's shared gateway, or else one started for this
 * process alone (once; the exit of the process stops it).
 */
export function testS3(): Promise<TestS3> {
  const shared = fromEnv();
  if (shared) return Promise.resolve(shared);
  privateGateway ??= startCephRgw().then(({ endpoint, accessKeyId, secretAccessKey, region }) => ({ endpoint, accessKeyId, secretAccessKey, region }));
  return privateGateway;
}

/**
 * An SDK client configured as non-AWS servers need it: path-style, and checksums only where S3
 * requires them (with the SDK's defaults RGW refuses streamed PutObjects with 411).
 */
export function s3Client(s3: TestS3, overrides: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...overrides,
  });
}

export interface TestBucket {
  name: string;
  s3: TestS3;
  /** A client for this server (destroyed by remove()). */
  client: S3Client;
  /** The S3 settings of a blob store on this bucket (add a prefix). */
  settings: {
    bucket: string;
    region: string;
    endpoint: string;
    forcePathStyle: true;
    credentials: { accessKeyId: string; secretAccessKey: string };
  };
  /** Deletes every object, aborts every multipart upload in progress, then deletes the bucket. */
  remove(): Promise<void>;
}

const BUCKET_PREFIX = /^[a-z0-9][a-z0-9-]{0,39}$/;

/** A new, empty bucket with a unique name starting with `prefix` (lowercase letters, digits, dashes). */
export async function freshBucket(prefix = 'test'): Promise<TestBucket> {
  if (!BUCKET_PREFIX.test(prefix)) throw new Error(`bucket prefix ${JSON.stringify(prefix)} must match ${BUCKET_PREFIX}`);
  const s3 = await testS3();
  const client = s3Client(s3);
  const name = `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  let removed = false;
  return {
    name,
    s3,
    client,
    settings: {
      bucket: name,
      region: s3.region,
      endpoint: s3.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    },
    async remove() {
      if (removed) return;
      removed = true;
      try {
        await emptyBucket(client, name);
        await client.send(new DeleteBucketCommand({ Bucket: name }));
      } finally {
        client.destroy();
      }
    },
  };
}

async function emptyBucket(client: S3Client, bucket: string): Promise<void> {
  let uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (;;) {
    for (const upload of uploads.Uploads ?? []) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }));
    }
    if (!uploads.IsTruncated) break;
    uploads = await client.send(
      new ListMultipartUploadsCommand({ Bucket: bucket, KeyMarker: uploads.NextKeyMarker, UploadIdMarker: uploads.NextUploadIdMarker }),
    );
  }
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length > 0) {
      const result = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
      if (result.Errors?.length) throw new Error(`could not empty bucket ${bucket}: ${JSON.stringify(result.Errors.slice(0, 3))}`);
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters. */
function sigV4Encode(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * A presigned GET URL (SigV4, query string), made by hand so the gateway's check is tested
 * independently of the SDK. `now` lets a test make one that has already expired.
 */
export function presignedGetUrl(s3: TestS3, bucket: string, key: string, expiresSeconds: number, now = new Date()): string {
  const url = new URL(s3.endpoint);
  const amzDate = now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const scope = `${day}/${s3.region}/s3/aws4_request`;
  const path = `/${sigV4Encode(bucket)}/${key.split('/').map(sigV4Encode).join('/')}`;
  const query: [string, string][] = [
    ['X-Amz-Algorithm', 'AWS4-HMAC-SHA256'],
    ['X-Amz-Credential', `${s3.accessKeyId}/${scope}`],
    ['X-Amz-Date', amzDate],
    ['X-Amz-Expires', String(expiresSeconds)],
    ['X-Amz-SignedHeaders', 'host'],
  ];
  const canonicalQuery = query
    .map(([k, v]) => `${sigV4Encode(k)}=${sigV4Encode(v)}`)
    .sort()
    .join('&');
  const canonicalRequest = ['GET', path, canonicalQuery, `host:${url.host}\n`, 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();
  const signingKey = [s3.region, 's3', 'aws4_request'].reduce<Buffer>((key, part) => hmac(key, part), hmac(`AWS4${s3.secretAccessKey}`, day));
  const signature = createHmac('sha256', signingKey).update(stringToSign).digest('hex');
  return `${url.origin}${path}?${canonicalQuery}&X-Amz-Signature=${signature}`;
}

/** The environment that puts a Portcullis server's blobs in `bucket` under `prefix`. */
export function storageEnv(bucket: TestBucket, options: { prefix?: string; redirect?: boolean } = {}): Record<string, string> {
  return {
    PORTCULLIS_STORAGE_DRIVER: 's3',
    PORTCULLIS_STORAGE_S3_BUCKET: bucket.settings.bucket,
    PORTCULLIS_STORAGE_S3_PREFIX: options.prefix ?? 'registry/',
    PORTCULLIS_STORAGE_S3_REGION: bucket.settings.region,
    PORTCULLIS_STORAGE_S3_ENDPOINT: bucket.settings.endpoint,
    PORTCULLIS_STORAGE_S3_FORCE_PATH_STYLE: 'true',
    PORTCULLIS_STORAGE_S3_ACCESS_KEY_ID: bucket.settings.credentials.accessKeyId,
    PORTCULLIS_STORAGE_S3_SECRET_ACCESS_KEY: bucket.settings.credentials.secretAccessKey,
    PORTCULLIS_STORAGE_S3_REDIRECT: options.redirect ? 'true' : 'false',
  };
}

/** Names directly under `path` (below the prefix) in the bucket a server's storageEnv points at. */
export async function listNames(env: Record<string, string>, path: string): Promise<string[]> {
  const client = new S3Client({
    endpoint: env.PORTCULLIS_STORAGE_S3_ENDPOINT,
    region: env.PORTCULLIS_STORAGE_S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: env.PORTCULLIS_STORAGE_S3_ACCESS_KEY_ID ?? '', secretAccessKey: env.PORTCULLIS_STORAGE_S3_SECRET_ACCESS_KEY ?? '' },
  });
  try {
    const prefix = `${env.PORTCULLIS_STORAGE_S3_PREFIX ?? ''}${path}/`;
    const names = new Set<string>();
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: env.PORTCULLIS_STORAGE_S3_BUCKET, Prefix: prefix, ContinuationToken: token }));
      for (const object of page.Contents ?? []) {
        const name = object.Key?.slice(prefix.length).split('/')[0];
        if (name) names.add(name);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return [...names];
  } finally {
    client.destroy();
  }
}
