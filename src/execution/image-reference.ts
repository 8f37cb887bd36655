/**
 * Docker image references, checked before a name reaches the Docker Engine API. dockerode puts
 * the name into the request path as it is, so a name such as `python:../../x` made the request
 * leave the engine's socket and crashed the process with a DNS error.
 *
 * The pattern follows the grammar in the comment of distribution/reference's reference.go. A
 * reference has an optional registry host and port, then lowercase path components joined by
 * `.`, `_`, `__` or dashes. An optional tag of at most 128 word characters, dots and dashes
 * and an optional digest follow. Registry hosts written as IPv6 addresses are not accepted.
 */
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]+)?`;
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const TAG = '[\\w][\\w.-]{0,127}';
const DIGEST = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}';

const REFERENCE = new RegExp(
  `^(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*(?::${TAG})?(?:@${DIGEST})?$`,
);

/** Returns whether `image` is a valid Docker image reference, such as `python:3.11-slim`. */
export function isImageReference(image: string): boolean {
  return REFERENCE.test(image);
}
