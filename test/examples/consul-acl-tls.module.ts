// The README's "Recipes → ACL and TLS" (typechecked; shown verbatim in the README, see
// readme-snippets.example.e2e-spec.ts). test/acl.reliability-spec.ts and
// test/tls.reliability-spec.ts run the same settings against real agents.
// #region readme
import { Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { DiscoveryModule, type DiscoveryModuleOptions } from '@athomic/discovery';

/** Spelled out; each `consul.*` field below also defaults from Consul's own variables. */
function discoveryOptions(config: ConfigService): DiscoveryModuleOptions {
  return {
    consul: {
      host: config.getOrThrow<string>('CONSUL_HOST'),
      port: 8501, // the agent's https port
      secure: true, // https (CONSUL_HTTP_ADDR=https://… or CONSUL_HTTP_SSL=true say the same)
      token: config.getOrThrow<string>('ORDERS_CONSUL_TOKEN'), // default: CONSUL_HTTP_TOKEN
      ca: '/etc/consul.d/tls/consul-agent-ca.pem', // a path or the PEM text; default: CONSUL_CACERT
      // Only for an agent with verify_incoming; both or neither (CONSUL_CLIENT_CERT / _KEY).
      cert: config.getOrThrow<string>('CONSUL_CLIENT_CERT_PEM'),
      key: config.getOrThrow<string>('CONSUL_CLIENT_KEY_PEM'),
    },
    service: { name: 'orders', port: Number(config.getOrThrow<string>('PORT')) },
  };
}

@Module({
  imports: [
    DiscoveryModule.forRootAsync({
      imports: [ConfigModule.forRoot()],
      inject: [ConfigService],
      useFactory: discoveryOptions,
    }),
  ],
})
export class AppModule {}
// #endregion readme
