// The README's "Health endpoint with @nestjs/terminus" example (typechecked; shown verbatim in the
// README, see readme-snippets.example.e2e-spec.ts). test/terminus.e2e-spec.ts runs the indicator
// in an HTTP app against a real agent.
// #region readme
import { Controller, Get, Module } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { DiscoveryHealthIndicator } from '@athomic/discovery/terminus';

@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly discovery: DiscoveryHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([() => this.discovery.isHealthy()]);
    // or isHealthy('consul', { requireRegistered: false, maxStaleMs: 5_000 })
  }
}

@Module({
  imports: [TerminusModule],
  controllers: [HealthController],
  providers: [DiscoveryHealthIndicator],
})
export class HealthModule {} // next to DiscoveryModule.forRoot({ ..., isGlobal: true })
// #endregion readme
