/* ESP-IDF shim (tests only): the FreeRTOS types and macros board_esp_idf.c uses. */
#pragma once
#include <stdint.h>
#include "sdkconfig.h"
typedef uint32_t TickType_t;
typedef int BaseType_t;
typedef unsigned int UBaseType_t;
typedef void *QueueHandle_t;
#define portMAX_DELAY ((TickType_t)0xffffffffUL)
#define configTICK_RATE_HZ CONFIG_FREERTOS_HZ
#define pdMS_TO_TICKS(ms) ((TickType_t)(((TickType_t)(ms) * (TickType_t)configTICK_RATE_HZ) / (TickType_t)1000U))
#define pdPASS 1
#define pdFAIL 0
#define tskIDLE_PRIORITY ((UBaseType_t)0U)
