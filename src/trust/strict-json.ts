// JSON as a signed payload must be read: exactly one meaning. JSON.parse quietly keeps the last of
// two equal keys, while other parsers keep the first, so a signer's tool and this server could
// read different digests out of the same signed bytes. Such documents are refused here.

export class StrictJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StrictJsonError';
  }
}

/** Parses UTF-8 JSON text, refusing invalid UTF-8, invalid JSON and any object with a repeated key. */
export function parseStrictJson(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new StrictJsonError('not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new StrictJsonError(`not valid JSON: ${(error as Error).message}`);
  }
  const repeated = firstRepeatedKey(text);
  if (repeated !== undefined) throw new StrictJsonError(`the key ${JSON.stringify(repeated.slice(0, 80))} appears twice in one object`);
  return value;
}

/**
 * The first key that appears twice in one object of `text`, which JSON.parse has already
 * accepted (so the scan can rely on the grammar: strings are well formed, brackets balance).
 */
function firstRepeatedKey(text: string): string | undefined {
  // One entry per open object or array: the keys seen so far (objects), or null (arrays).
  const stack: (Set<string> | null)[] = [];
  let expectingKey = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      const keys = stack[stack.length - 1];
      if (expectingKey && keys) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      expectingKey = false;
      i = end;
    } else if (char === '{') {
      stack.push(new Set());
      expectingKey = true;
    } else if (char === '[') {
      stack.push(null);
      expectingKey = false;
    } else if (char === '}' || char === ']') {
      stack.pop();
      expectingKey = false;
    } else if (char === ',') {
      expectingKey = stack[stack.length - 1] instanceof Set;
    }
  }
  return undefined;
}
