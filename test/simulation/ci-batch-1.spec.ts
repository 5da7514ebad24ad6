import { ciBatchHalf } from './ci-batch.js';

ciBatchHalf(1);
