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

/** A throw-away CA plus server and client certs (EC P-256, valid 2 days) made with the openssl CLI. */
export async function makeTestCa(dir: string): Promise<TestCa> {
  await mkdir(dir, { recursive: true });
  const file = (name: string): string => path.join(dir, name);
  const openssl = async (...args: string[]): Promise<void> => {
    try {
      await run('openssl', args, { cwd: dir });
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? '';
      throw new Error(`openssl ${args[0]} failed: ${(error as Error).message}\n${stderr}`, {
        cause: error,
      });
    }
  };
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

  await openssl(
    'req', '-x509', ...newKey, '-sha256', '-days', '2',
    '-keyout', file('ca.key'), '-out', file('ca.pem'), '-subj', '/CN=athomic test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ); // prettier-ignore

  const issue = async (name: string, cn: string, extensions: string): Promise<void> => {
    await writeFile(file(`${name}.ext`), extensions);
    await openssl(
      'req', '-new', ...newKey, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`),
      '-subj', `/CN=${cn}`,
    ); // prettier-ignore
    await openssl(
      'x509', '-req', '-sha256', '-days', '2', '-in', file(`${name}.csr`),
      '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-set_serial', String(randomInt(1, 2 ** 47)),
      '-extfile', file(`${name}.ext`), '-out', file(`${name}.pem`),
    ); // prettier-ignore
  };
  await issue(
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
