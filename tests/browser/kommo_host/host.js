/*
 * A stand-in for Kommo's widget host, reduced to what Kommo documents for widgets: an AMD define/require
 * that hands the widget a jQuery-like `$`, a widget object with get_settings(), system(), langs and
 * $authorizedAjax (jQuery-style: adds Kommo's one-time token as X-Auth-Token, here minted by the Kommo sandbox
 * through the test), and the settings modal that calls `settings` and, on Save, `onSave({active, fields})`.
 */
(function () {
  'use strict';
  var WIDGET_PATH = '/upl/contactsync/widget';
  var modules = {};
  var pending = null;

  // The jQuery-like `$`: only wrapping, never relied on by the widget beyond being passed in.
  function $(selector) {
    var nodes = typeof selector === 'string' ? document.querySelectorAll(selector) : [selector];
    var wrapped = Array.prototype.slice.call(nodes);
    wrapped.length = nodes.length;
    return wrapped;
  }
  modules.jquery = $;

  window.define = function (deps, factory) {
    pending = {deps: deps, factory: factory};
  };
  window.define.amd = {};
  window.require = function (deps, callback) {
    callback.apply(null, deps.map(function (name) { return modules[name]; }));
  };

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var node = document.createElement('script');
      node.src = src;
      node.onload = function () { resolve(pending); };
      node.onerror = function () { reject(new Error('cannot load ' + src)); };
      document.head.appendChild(node);
    });
  }

  // jqXHR's failure shape: what the widget reads from a refused call.
  function ajaxFailure(status, body) {
    var json = null;
    try { json = JSON.parse(body); } catch (ignored) { json = null; }
    return {status: status, responseText: body, responseJSON: json};
  }

  function authorizedAjax(options) {
    var method = (options.method || options.type || 'GET').toUpperCase();
    var promise = fetch('/ajax/v1/widget_token', {method: 'POST'}).then(function (r) {
      return r.json();
    }).then(function (minted) {
      var headers = {'X-Auth-Token': minted.token};
      if (options.contentType) {
        headers['Content-Type'] = options.contentType;
      }
      return fetch(options.url, {method: method, headers: headers, body: options.data});
    }).then(function (response) {
      return response.text().then(function (body) {
        if (!response.ok) {
          throw ajaxFailure(response.status, body);
        }
        return body ? JSON.parse(body) : null;
      });
    }, function (error) {
      if (error && 'status' in error) {
        throw error;
      }
      window.__hostNetworkErrors = (window.__hostNetworkErrors || []).concat([String(error)]);
      throw ajaxFailure(0, '');
    });
    window.__hostCalls = (window.__hostCalls || []).concat([method + ' ' + options.url]);
    return {then: function (done, fail) { return promise.then(done, fail); }};
  }

  var saved = {};

  function open(Widget, manifest, langs) {
    Widget.prototype.get_settings = function () {
      var out = {widget_code: 'contactsync', path: WIDGET_PATH, version: manifest.widget.version};
      Object.keys(saved).forEach(function (k) { out[k] = saved[k]; });
      return out;
    };
    Widget.prototype.system = function () {
      return {area: 'settings', subdomain: 'acme', amouser_id: 1, amojo_server: '', domain: location.host};
    };
    Widget.prototype.$authorizedAjax = authorizedAjax;
    var widget = new Widget();
    widget.langs = langs;
    widget.params = widget.get_settings();
    ['render', 'init', 'bind_actions'].forEach(function (name) {
      if (widget.callbacks[name]() !== true) {
        throw new Error(name + ' did not return true');
      }
    });
    var fields = document.getElementById('widget-fields');
    Object.keys(manifest.settings).forEach(function (key) {
      var field = manifest.settings[key];
      var label = document.createElement('label');
      var path = field.name.split('.');
      label.textContent = (langs[path[0]] || {})[path[1]] || field.name;
      var input = document.createElement('input');
      input.name = key;
      input.type = field.type === 'pass' ? 'password' : 'text';
      label.appendChild(input);
      fields.appendChild(label);
    });
    document.getElementById('widget-settings').hidden = false;
    widget.callbacks.settings($('#widget-settings-form'));
    document.getElementById('widget-save').addEventListener('click', function () {
      var result = document.getElementById('host-save-result');
      var values = {};
      Object.keys(manifest.settings).forEach(function (key) {
        values[key] = document.querySelector('#widget-fields input[name="' + key + '"]').value;
      });
      result.setAttribute('data-result', 'pending');
      Promise.resolve(widget.callbacks.onSave({active: true, fields: values})).then(function (ok) {
        if (ok === true) {
          saved = values; // Kommo keeps the settings only when onSave lets the save go on
        }
        result.setAttribute('data-result', ok === true ? 'saved' : 'refused');
      });
    });
    window.__widget = widget;
  }

  window.addEventListener('DOMContentLoaded', function () {
    var status = document.getElementById('host-status');
    Promise.all([
      fetch(WIDGET_PATH + '/manifest.json').then(function (r) { return r.json(); }),
      fetch(WIDGET_PATH + '/i18n/' + (document.documentElement.lang || 'en') + '.json').then(function (r) {
        return r.json();
      }),
      loadScript(WIDGET_PATH + '/script.js')
    ]).then(function (loaded) {
      var module = loaded[2];
      window.require(module.deps, function () {
        open(module.factory.apply(null, arguments), loaded[0], loaded[1]);
      });
      status.setAttribute('data-ready', 'yes');
    }).catch(function (error) {
      status.setAttribute('data-ready', 'failed');
      status.textContent = String(error);
    });
  });
})();
