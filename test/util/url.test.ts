import { describe, expect, it } from 'vitest';
import { redactUrl, redactUrls } from '../../src/util/url.js';

describe('redactUrl', () => {
  const cases: Array<[string, string]> = [
    ['http://user:s3cret@127.0.0.1:5400', 'http://***@127.0.0.1:5400'],
    ['https://ghp_token@api.example.com/v3', 'https://***@api.example.com/v3'],
    ['http://user:p@ss@host:1/path', 'http://***@host:1/path'],
    ['http://host/a@b', 'http://host/a@b'],
    ['http://host?mail=a@b', 'http://host?mail=a@b'],
    ['http://127.0.0.1:5000', 'http://127.0.0.1:5000'],
    // Unparseable: the password contains "/", so everything up to the last "@" goes.
    ['http://user:pa/ss@host', 'http://***@host'],
    ['ftp://user:s3cret@host', 'ftp://***@host'],
    ['not a url', 'not a url'],
    [
      'http://127.0.0.1:5499/x?token=slw_abc&branch=main',
      'http://127.0.0.1:5499/x?token=[redacted]&branch=main',
    ],
    ['http://u:slw_abc@host/x?api_key=k1', 'http://***@host/x?api_key=[redacted]'],
    ['http://host/slw_abc', 'http://host/slw_[redacted]'],
  ];
  for (const [url, expected] of cases) {
    it(`redacts ${url}`, () => {
      expect(redactUrl(url)).toBe(expected);
    });
  }
});

describe('redactUrls', () => {
  it('redacts each URL in a message', () => {
    const message =
      'cannot reach http://user:s3cret@127.0.0.1:5400: TypeError: Request cannot be ' +
      'constructed from a URL that includes credentials: http://user:s3cret@127.0.0.1:5400/api';
    const redacted = redactUrls(message);
    expect(redacted).not.toContain('s3cret');
    expect(redacted).toBe(
      'cannot reach http://***@127.0.0.1:5400: TypeError: Request cannot be ' +
        'constructed from a URL that includes credentials: http://***@127.0.0.1:5400/api',
    );
  });

  it('keeps text around quoted URLs', () => {
    expect(redactUrls('got "https://a:b@c/d" (http://e:f@g)')).toBe(
      'got "https://***@c/d" (http://***@g)',
    );
  });
});
