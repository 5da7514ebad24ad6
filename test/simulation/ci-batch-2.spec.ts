import { ciBatchHalf } from './ci-batch.js';

ciBatchHalf(2);
