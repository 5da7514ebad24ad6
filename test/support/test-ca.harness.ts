import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCa {
  dir: string;
  caFile: string;
  caKeyFile: string;
  /** Server cert for 127.0.0.1 / localhost / server.dc1.consul (the agent's cert_file). */
  serverCertFile: string;
  serverKeyFile: string;
  /** Client cert signed by the same CA (for verify_incoming). */
  clientCertFile: string;
  clientKeyFile: string;
}

const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function openssl(dir: string, ...args: string[]): Promise<void> {
  try {
    await run('openssl', args, { cwd: dir });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`openssl ${args[0]} failed: ${(error as Error).message}\n${stderr}`, {
      cause: error,
    });
  }
}

/** `name`.pem / `name`.key in `dir`, signed by the CA there, with these X.509 extensions. */
async function issue(dir: string, name: string, cn: string, extensions: string): Promise<void> {
  const file = (f: string): string => path.join(dir, f);
  await writeFile(file(`${name}.ext`), extensions);
  await openssl(dir,
    'req', '-new', ...NEW_KEY, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`),
    '-subj', `/CN=${cn}`,
  ); // prettier-ignore
  await openssl(dir,
    'x509', '-req', '-sha256', '-days', '2', '-in', file(`${name}.csr`),
    '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-set_serial', String(randomInt(1, 2 ** 47)),
    '-extfile', file(`${name}.ext`), '-out', file(`${name}.pem`),
  ); // prettier-ignore
}

/** A server certificate from `ca` for the DNS name `dnsName` only (a service name, say). */
export async function issueServerCert(
  ca: TestCa,
  dnsName: string,
): Promise<{ certFile: string; keyFile: string }> {
  const name = `server-${dnsName}`;
  const extensions = [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=DNS:${dnsName}`,
    '',
  ];
  await issue(ca.dir, name, dnsName, extensions.join('\n'));
  return { certFile: path.join(ca.dir, `${name}.pem`), keyFile: path.join(ca.dir, `${name}.key`) };
}

/** A throw-away CA plus server and client certs (EC P-256, valid 2 days) made with the openssl CLI. */
export async function makeTestCa(dir: string): Promise<TestCa> {
  await mkdir(dir, { recursive: true });
  const file = (name: string): string => path.join(dir, name);

  await openssl(dir,
    'req', '-x509', ...NEW_KEY, '-sha256', '-days', '2',
    '-keyout', file('ca.key'), '-out', file('ca.pem'), '-subj', '/CN=athomic test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ); // prettier-ignore

  await issue(
    dir,
    'server',
    'server.dc1.consul',
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      // clientAuth too: Consul uses its cert_file for outgoing TLS as well.
      'extendedKeyUsage=serverAuth,clientAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:server.dc1.consul',
      '',
    ].join('\n'),
  );
  await issue(
    dir,
    'client',
    'athomic test client',
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=clientAuth',
      '',
    ].join('\n'),
  );

  return {
    dir,
    caFile: file('ca.pem'),
    caKeyFile: file('ca.key'),
    serverCertFile: file('server.pem'),
    serverKeyFile: file('server.key'),
    clientCertFile: file('client.pem'),
    clientKeyFile: file('client.key'),
  };
}
