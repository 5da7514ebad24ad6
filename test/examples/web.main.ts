// The README's HTTP-check entry point (typechecked, never run by the tests).
// #region readme
// main.ts
import 'reflect-metadata';
import { ConfigService } from '@nestjs/config';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './web.module.js';

const app = await NestFactory.create(AppModule);
app.enableShutdownHooks(); // deregistered before the HTTP server closes
const config = app.get(ConfigService);
// Where the check URL points: the agent probes this address and port.
await app.listen(Number(config.getOrThrow<string>('PORT')), config.getOrThrow('ADVERTISE_ADDRESS'));
// #endregion readme
