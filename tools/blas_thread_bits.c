// Why `run.threads` is part of what fixes a run's bits (docs/config.md): the same SGEMM
// through OpenBLAS with 1 and with 2 threads, on shapes of our models' products, and how
// many result elements differ in their bits. Our own loops give the same bits on any
// thread count (each thread owns whole rows or columns); OpenBLAS's products do not.
//
//   I=/usr/include/x86_64-linux-gnu/openblas-openmp L=/usr/lib/x86_64-linux-gnu/openblas-openmp
//   gcc -O2 -fopenmp -I$I tools/blas_thread_bits.c -L$L -lopenblas -o /tmp/blas_thread_bits && /tmp/blas_thread_bits
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float* random_matrix(int n) {
  float* x = malloc(sizeof(float) * (size_t)n);
  for (int i = 0; i < n; ++i) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  return x;
}

static void product(int threads, int m, int n, int k, int trans_a, int trans_b, const float* a, const float* b,
                    float* c) {
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              1.f, a, trans_a ? m : k, b, trans_b ? k : n, 0.f, c, n);
}

int main(void) {
  // {m, n, k, A transposed, B transposed}: forward (x W), input gradient (dy W^T),
  // weight gradient (x^T dy) of d_model 64 and 256 layers over 2,000-3,000 rows.
  const int shapes[][5] = {{2000, 256, 64, 0, 0}, {2000, 64, 256, 0, 1}, {64, 256, 2000, 1, 0},
                           {3000, 192, 64, 0, 0}, {64, 192, 3000, 1, 0}, {128, 128, 128, 0, 0}};
  int differing_products = 0;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
    const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ta = shapes[s][3], tb = shapes[s][4];
    float *a = random_matrix(m * k), *b = random_matrix(k * n);
    float *c1 = calloc((size_t)m * n, sizeof(float)), *c2 = calloc((size_t)m * n, sizeof(float));
    product(1, m, n, k, ta, tb, a, b, c1);
    product(2, m, n, k, ta, tb, a, b, c2);
    int differ = 0;
    for (int i = 0; i < m * n; ++i) differ += memcmp(c1 + i, c2 + i, sizeof(float)) != 0;
    differing_products += differ > 0;
    printf("m %4d n %3d k %4d %s: %6d of %6d elements differ between 1 and 2 threads\n", m, n, k,
           ta ? "A^T B" : (tb ? "A B^T" : "A B  "), differ, m * n);
    free(a), free(b), free(c1), free(c2);
  }
  printf("%d of %zu products differ\n", differing_products, sizeof shapes / sizeof shapes[0]);
  return 0;
}
